-- docker-compose only: the two databases the stack uses, in the compose file's Postgres.
-- (In production create them with your database tooling; `bosun db upgrade` and
-- `dagster instance migrate` create the tables.)
CREATE DATABASE dagster;
CREATE DATABASE bosun;
