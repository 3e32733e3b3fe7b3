-- Session ids are now stored as a SHA-256 of the cookie's value, so a copy of this
-- table cannot be replayed as cookies. Rows written before held the cookie values
-- themselves: they are removed, and everyone signs in once more.
DELETE FROM sessions;
