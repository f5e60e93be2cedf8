-- Subscriber: LISTEN takes no parameter; {channel} is filled with psycopg.sql.Identifier.
LISTEN {channel}
