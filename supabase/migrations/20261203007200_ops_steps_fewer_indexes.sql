-- One index fewer written on every step insert and every step status change.
--
-- ops_mission_steps_kind_created_idx served the cap gates that counted today's steps of a kind. Since
-- 20261203007100_ops_gate_counters those gates read O(1) counters; only the counters' recount
-- (ops_internal.exact_gate_counts, a backfill and repair) still filters steps by kind and day, and it runs
-- rarely. A status change cannot be a HOT update (status is in the claim, lease and deadline indexes'
-- predicates), so every index without a predicate gets a new entry each time: this one was a third of them.
drop index if exists public.ops_mission_steps_kind_created_idx;
