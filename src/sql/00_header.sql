-- delq: a queue for personal-data deletion requests.
-- This script is assembled from src/sql/*.sql by the Makefile.

\echo Use "CREATE EXTENSION delq" to load this file. \quit
