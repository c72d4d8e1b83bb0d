-- Retention reads finished history by age. Rejected proposals and processed reactions had no index on the
-- age it prunes by, so every heartbeat scanned the whole table (18 ms at 100,000 proposals: the heartbeat's
-- cost grew with history, which bench P4 measures). Partial indexes keep the scan on the prunable rows.

create index ops_mission_proposals_rejected_idx
  on public.ops_mission_proposals (decided_at) where status = 'rejected';

create index ops_agent_reactions_processed_idx
  on public.ops_agent_reactions (processed_at) where processed_at is not null;
