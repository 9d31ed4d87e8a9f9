-- Fewer, wider merges for the tables that are only written and scanned. The sink adds about one part a second
-- to each table, and ClickHouse's default merge selector (merge_selector_base = 5) merges a handful of parts of
-- a size at a time, so every row is rewritten once for each fivefold growth of its part: merges were most of
-- ClickHouse's CPU at 5,000 flows/s. With a base of 20 a merge waits for about twenty parts of a size, and each
-- row is rewritten about half as often (docs/audit-store.md, "Merges", has the measurements).
--
-- The price is more small parts alive at a time: tens, not thousands. ClickHouse still lowers the base as parts
-- age (fully after an hour for small ones) and as a partition's parts pass 10 to 50, so old parts merge down as
-- before. decisions and violations are read whole or by time; facts are few. disclosures keeps the default: the
-- subject access query reads every part for one pupil's rows, and paid about 3.5 ms more a part.
ALTER TABLE decisions MODIFY SETTING merge_selector_base = 20;
ALTER TABLE violations MODIFY SETTING merge_selector_base = 20;
ALTER TABLE facts MODIFY SETTING merge_selector_base = 20;
