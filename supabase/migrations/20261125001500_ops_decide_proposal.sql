-- Human decisions on pending proposals. Approval re-runs the gates (invariant 4) and can therefore end
-- as rejected with the gate's reason; rejection records who decided and why.

create or replace function ops_internal.pending_proposal(proposal_id bigint)
returns public.ops_mission_proposals
language plpgsql
set search_path = ''
as $$
declare
  found_row public.ops_mission_proposals;
begin
  if proposal_id is null then
    perform ops_internal.invalid('proposal_id is required');
  end if;
  select p.* into found_row from public.ops_mission_proposals p where p.id = pending_proposal.proposal_id for update;
  if not found then
    perform ops_internal.not_found(pg_catalog.format('proposal %s not found', proposal_id));
  end if;
  if found_row.status <> 'pending' then
    perform ops_internal.conflict(pg_catalog.format('proposal %s is not pending (it is %s)', proposal_id,
      found_row.status), 'only pending proposals can be approved or rejected');
  end if;
  return found_row;
end;
$$;

select ops_internal.revoke_api_execute();

create or replace function public.ops_approve_proposal(proposal_id bigint, decided_by text)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  who text := ops_internal.check_text(ops_approve_proposal.decided_by, 'decided_by', 200);
  proposal public.ops_mission_proposals;
  kinds text[];
  reason text;
begin
  perform ops_internal.require_fresh_snapshots();
  proposal := ops_internal.pending_proposal(ops_approve_proposal.proposal_id);
  kinds := array(select s ->> 'kind' from pg_catalog.jsonb_array_elements(proposal.proposed_steps) s);
  reason := ops_internal.gate_reason(proposal.agent_id, kinds, false, true);
  if reason is not null then
    update public.ops_mission_proposals p
       set status = 'rejected', rejection_reason = reason, decided_by = who, decided_at = pg_catalog.now()
     where p.id = proposal.id
    returning * into proposal;
  else
    update public.ops_mission_proposals p
       set status = 'accepted', decided_by = who, decided_at = pg_catalog.now()
     where p.id = proposal.id
    returning * into proposal;
    perform ops_internal.create_mission(proposal);
  end if;
  return ops_internal.proposal_result(proposal, false);
end;
$$;

revoke execute on function public.ops_approve_proposal(bigint, text) from public, anon, authenticated;
grant execute on function public.ops_approve_proposal(bigint, text) to service_role;

create or replace function public.ops_reject_proposal(proposal_id bigint, reason text, decided_by text)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  why text := ops_internal.check_text(ops_reject_proposal.reason, 'reason', 1000);
  who text := ops_internal.check_text(ops_reject_proposal.decided_by, 'decided_by', 200);
  proposal public.ops_mission_proposals;
begin
  proposal := ops_internal.pending_proposal(ops_reject_proposal.proposal_id);
  update public.ops_mission_proposals p
     set status = 'rejected', rejection_reason = why, decided_by = who, decided_at = pg_catalog.now()
   where p.id = proposal.id
  returning * into proposal;
  return ops_internal.proposal_result(proposal, false);
end;
$$;

revoke execute on function public.ops_reject_proposal(bigint, text, text) from public, anon, authenticated;
grant execute on function public.ops_reject_proposal(bigint, text, text) to service_role;
