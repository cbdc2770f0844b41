-- The users' tags for proxy segments, from the demo warehouse: sign-up time and orders,
-- as of the run's data interval end (events after it are replayed on top by funnel).
SELECT u.user_id,
       CAST(u.signup_date AS TIMESTAMP) AS first_seen,
       COALESCE(o.orders, 0) AS order_count
FROM funnel_demo.users u
LEFT JOIN (
  SELECT user_id, COUNT(*) AS orders
  FROM funnel_demo.orders
  WHERE order_date < to_date('{{ data_interval_end.strftime('%Y-%m-%d') }}')
  GROUP BY user_id
) o ON o.user_id = u.user_id
WHERE u.signup_date < to_date('{{ data_interval_end.strftime('%Y-%m-%d') }}')
