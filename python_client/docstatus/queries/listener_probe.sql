-- The listener's health probe (Listener and Subscriber): a NOTIFY to itself on its private
-- channel. It comes back only if the connection still carries notifications both ways.
SELECT pg_notify(%(channel)s, %(token)s)
