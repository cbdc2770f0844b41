-- The demo warehouse: users and orders, generated in Hive itself (no files to ship).
-- Dates are relative to the day it is built, so "recent" segments stay non-empty.
CREATE DATABASE IF NOT EXISTS funnel_demo;

DROP TABLE IF EXISTS funnel_demo.users;
CREATE TABLE funnel_demo.users STORED AS PARQUET AS
SELECT id AS user_id,
       date_sub(current_date(), CAST(id % 400 AS INT)) AS signup_date,
       element_at(array('DE', 'FR', 'IN', 'US', 'BR'), CAST(id % 5 AS INT) + 1) AS country
FROM range(200000);

DROP TABLE IF EXISTS funnel_demo.orders;
CREATE TABLE funnel_demo.orders STORED AS PARQUET AS
SELECT id AS order_id,
       (id * 7919) % 200000 AS user_id,
       CAST((id % 97) + 1 AS DOUBLE) AS amount,
       date_sub(current_date(), CAST(id % 90 AS INT)) AS order_date
FROM range(500000);
