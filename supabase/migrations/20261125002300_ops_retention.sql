-- Retention: the heartbeat prunes history older than policy retention allows, in capped batches, so the
-- hot tables stay small and one heartbeat never does unbounded work. A missing retention setting keeps
-- that history forever. Finished missions go with their proposal and steps; events are the log and go by
-- age alone; rejected proposals (no mission) by decision age.

create or replace function ops_internal.prune_history()
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  policy jsonb := ops_internal.policy('retention');
  batch integer := coalesce((policy ->> 'batch_size')::integer, 5000);
  events_pruned integer := 0;
  missions_pruned integer := 0;
  rejected_pruned integer := 0;
  reactions_pruned integer := 0;
  runs_pruned integer := 0;
begin
  if policy ? 'events_days' then
    delete from public.ops_agent_events e
     where e.id in (select x.id from public.ops_agent_events x
                     where x.created_at < pg_catalog.now() - pg_catalog.make_interval(days => (policy ->> 'events_days')::integer)
                     order by x.created_at limit batch);
    get diagnostics events_pruned = row_count;
  end if;
  if policy ? 'missions_days' then
    delete from public.ops_mission_proposals p
     where p.id in (select m.proposal_id from public.ops_missions m
                     where m.finalized_at < pg_catalog.now() - pg_catalog.make_interval(days => (policy ->> 'missions_days')::integer)
                     order by m.finalized_at limit batch);
    get diagnostics missions_pruned = row_count;
    delete from public.ops_mission_proposals p
     where p.id in (select x.id from public.ops_mission_proposals x
                     where x.status = 'rejected'
                       and x.decided_at < pg_catalog.now() - pg_catalog.make_interval(days => (policy ->> 'missions_days')::integer)
                     order by x.decided_at limit batch);
    get diagnostics rejected_pruned = row_count;
  end if;
  if policy ? 'reactions_days' then
    delete from public.ops_agent_reactions r
     where r.id in (select x.id from public.ops_agent_reactions x
                     where x.processed_at < pg_catalog.now() - pg_catalog.make_interval(days => (policy ->> 'reactions_days')::integer)
                     order by x.processed_at limit batch);
    get diagnostics reactions_pruned = row_count;
  end if;
  if policy ? 'action_runs_days' then
    delete from public.ops_action_runs a
     where a.id in (select x.id from public.ops_action_runs x
                     where x.started_at < pg_catalog.now() - pg_catalog.make_interval(days => (policy ->> 'action_runs_days')::integer)
                     order by x.started_at limit batch);
    get diagnostics runs_pruned = row_count;
  end if;
  return pg_catalog.jsonb_build_object('events', events_pruned, 'missions', missions_pruned,
    'rejected_proposals', rejected_pruned, 'reactions', reactions_pruned, 'action_runs', runs_pruned);
end;
$$;

select ops_internal.revoke_api_execute();
