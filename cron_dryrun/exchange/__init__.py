"""One exchange with the cron, as recorded: the answer and what the database saw around it."""
