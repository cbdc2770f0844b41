-- Demo segment rows for the catalog (funnel_segments). Re-running replaces them.
REPLACE INTO funnel_segments (segment_id, name, kind, query, run_at, rule, enabled) VALUES
('big_spenders', 'Users who spent over 150 in 90 days', 'dynamic',
 'SELECT user_id FROM funnel_demo.orders GROUP BY user_id HAVING SUM(amount) > 150', NULL, NULL, TRUE),
('german_users', 'Users in Germany', 'dynamic',
 'SELECT user_id FROM funnel_demo.users WHERE country = ''DE''', NULL, NULL, TRUE),
('recent_signups', 'Signed up in the 30 days before the run', 'dynamic',
 'SELECT user_id FROM funnel_demo.users WHERE signup_date > date_sub(''{{ ds }}'', 30)', NULL, NULL, TRUE),
('black_friday_2026', 'Ordered in the week before Black Friday 2026', 'static',
 'SELECT DISTINCT user_id FROM funnel_demo.orders WHERE order_date >= date_sub(current_date(), 7)',
 '2026-11-20 09:00:00', NULL, TRUE),
('french_users', 'Users in France (paused)', 'dynamic',
 'SELECT user_id FROM funnel_demo.users WHERE country = ''FR''', NULL, NULL, FALSE),
('new_users', 'New users (answered at request time)', 'proxy',
 NULL, NULL, '{"tag": "new_user"}', TRUE);
