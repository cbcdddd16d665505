-- The user name a token goes with, where the git host wants a particular one.
ALTER TABLE credentials ADD COLUMN username TEXT;
