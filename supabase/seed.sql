-- Default policy for agent-ops. Loaded by `agent-ops migrate --seed` (make run, tests) and by
-- `supabase db reset` / `supabase db push --include-seed`. Idempotent: existing keys are never overwritten,
-- so an edited policy survives a re-seed. Every key is documented in README.md ("Policy").

insert into public.ops_policy (key, value, updated_by) values
  -- The kill switch: false rejects every new proposal and stops all claiming.
  ('system', '{"enabled": true}', 'seed'),

  -- Which proposals pass without a human. Risky kinds (post_tweet, deploy) are deliberately absent.
  ('auto_approve', '{"enabled": true, "allowed_step_kinds": ["draft_tweet", "crawl", "analyze", "write_content"]}', 'seed'),

  -- Proposals per agent per UTC day (pending + accepted); per_agent overrides the limit for one agent.
  ('daily_proposal_limit', '{"limit": 100, "per_agent": {}}', 'seed'),

  -- Cap gates per step kind: daily_limit counts today's steps of that kind in missions not cancelled;
  -- enabled=false rejects every proposal with that kind.
  ('step_kind_gates', '{"post_tweet": {"daily_limit": 8}, "write_content": {"daily_limit": 20}, "deploy": {"enabled": false}}', 'seed'),

  -- Approved + running missions allowed at once.
  ('max_active_missions', '{"limit": 25}', 'seed'),

  -- Leases, retries and the circuit breaker. The default lease is the seed's 30-minute stale threshold.
  ('worker_policy', '{"lease_seconds": 1800, "max_attempts": 3, "backoff_base_seconds": 10, "backoff_max_seconds": 3600, "circuit_breaker_threshold": 3, "kinds": {}}', 'seed'),

  -- Event -> reaction patterns. Off until switched on (new autonomy starts disabled).
  ('reaction_matrix', '{"enabled": false, "patterns": [{"name": "tweet_posted_analyze", "source": "twitter-alt", "tags": ["tweet", "posted"], "target": "growth", "type": "analyze", "probability": 0.3, "cooldown": 120}, {"name": "mission_failed_diagnose", "source": "*", "tags": ["mission:failed"], "target": "brain", "type": "diagnose", "step_kind": "analyze", "probability": 1.0, "cooldown": 60}]}', 'seed'),

  -- How long history is kept, in days, and how many rows one heartbeat may prune per table.
  ('retention', '{"events_days": 30, "missions_days": 30, "reactions_days": 30, "action_runs_days": 14, "batch_size": 5000}', 'seed'),

  -- Heartbeat budgets (seed: 4 s triggers, 3 s reactions) and batch caps.
  ('heartbeat', '{"triggers_budget_ms": 4000, "reactions_budget_ms": 3000, "recovery_batch": 100, "reactions_batch": 50}', 'seed')
on conflict (key) do nothing;
