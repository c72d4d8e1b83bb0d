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

-- The seed's trigger catalogue: 4 reactive and 4 proactive rules, shipped disabled as ready examples. The seed
-- runs as the table owner and inserts them; after that, change rules through the API, which validates every
-- change and records it as a trigger:* event: `agent-ops triggers enable NAME` (or, in SQL,
-- select public.ops_set_trigger_enabled('NAME', true, 'you');), `agent-ops triggers set`, or the console's
-- Triggers page. See README.md, "Trigger rules through the API".
insert into public.ops_trigger_rules
  (name, trigger_event, conditions, action_config, cooldown_minutes, skip_probability, jitter_minutes, enabled)
values
  ('tweet_high_engagement', 'threshold',
   '{"event_type": "tweet:metrics", "field": "engagement_rate", "op": ">", "value": 0.05, "lookback_minutes": 60}',
   '{"agent_id": "growth", "title": "Why did tweet {{event.payload.tweet_id}} go viral?", "steps": [{"kind": "analyze", "payload": {"topic": "tweet-performance", "tweet_id": "{{event.payload.tweet_id}}", "engagement_rate": "{{value}}"}}]}',
   120, 0, 0, false),
  ('mission_failed', 'event',
   '{"event_type": "mission:failed", "lookback_minutes": 60}',
   '{"agent_id": "brain", "title": "Diagnose failed mission #{{event.mission_id}}", "steps": [{"kind": "analyze", "payload": {"task": "diagnose", "mission_id": "{{event.mission_id}}", "reason": "{{event.payload.reason}}"}}]}',
   60, 0, 0, false),
  ('content_published', 'event',
   '{"event_type": "content:published", "lookback_minutes": 120}',
   '{"agent_id": "observer", "title": "Review published content: {{event.title}}", "steps": [{"kind": "analyze", "payload": {"task": "review-quality", "event_id": "{{event.id}}"}}]}',
   120, 0, 0, false),
  ('insight_promoted', 'event',
   '{"event_type": "insight:promoted", "lookback_minutes": 240}',
   '{"agent_id": "brain", "title": "Promote insight to memory: {{event.title}}", "steps": [{"kind": "write_content", "payload": {"task": "memorize", "insight": "{{event.payload}}"}}]}',
   240, 0, 0, false),
  ('proactive_scan_signals', 'schedule',
   '{"topics": ["competitor launches", "community questions", "industry news"]}',
   '{"agent_id": "growth", "title": "Scan signals: {{topic}}", "steps": [{"kind": "crawl", "payload": {"topic": "{{topic}}"}}, {"kind": "analyze", "payload": {"topic": "{{topic}}"}}]}',
   180, 0.1, 40, false),
  ('proactive_draft_tweet', 'schedule',
   '{"topics": ["product tip", "behind the scenes", "lesson learned"]}',
   '{"agent_id": "twitter-alt", "title": "Draft a tweet: {{topic}}", "steps": [{"kind": "draft_tweet", "payload": {"topic": "{{topic}}"}}]}',
   240, 0.15, 45, false),
  ('proactive_research', 'schedule',
   '{"topics": ["agent architectures", "pricing", "retention"]}',
   '{"agent_id": "brain", "title": "Research: {{topic}}", "steps": [{"kind": "crawl", "payload": {"topic": "{{topic}}"}}, {"kind": "write_content", "payload": {"topic": "{{topic}}", "format": "memo"}}]}',
   360, 0.1, 30, false),
  ('proactive_analyze_ops', 'schedule',
   '{}',
   '{"agent_id": "observer", "title": "Analyze operations of the last 8 hours", "steps": [{"kind": "analyze", "payload": {"task": "ops-review", "window_hours": 8}}]}',
   480, 0.1, 25, false)
on conflict (name) do nothing;
