"""What the suite talks to: the cron client (HTTP, TLS, deadlines, Vercel's edge) and the
app database with its providers (url, embedded, testcontainers)."""
