-- P3: one auto-approved proposal with a 3-step mission, from one of 50 agents.
\set agent random(1, 50)
select public.ops_create_proposal(jsonb_build_object(
  'agent_id', 'agent-' || :agent,
  'title', 'Research and write up',
  'steps', '[{"kind": "crawl", "payload": {"url": "https://example.com"}}, {"kind": "analyze"}, {"kind": "write_content"}]'::jsonb));
