-- A webhook whose receiver could not be reached (no HTTP answer) is down: only the delivery
-- whose try found it so (its probe) is tried, at its own backoff, and the webhook's other
-- deliveries wait, instead of a failing try, and its writes, per event. Cleared by any
-- answer from the receiver, by the probe ending, or by a redelivery.
ALTER TABLE webhooks ADD COLUMN down_probe TEXT;
