-- P1 decomposition: the agent-ops step cycle with no Python at all. pgbench claims one step through
-- ops_claim_next_step and completes it through ops_complete_step (events, dependency promotion and
-- finalization included), in one statement so a claim that finds nothing is a no-op, not an error.
select public.ops_complete_step((s ->> 'id')::bigint, (s ->> 'attempt')::integer, '{}')
  from pg_catalog.jsonb_array_elements(public.ops_claim_next_step('pgbench', array['noop'])) s;
