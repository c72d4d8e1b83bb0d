-- P3 baseline: the rows a proposal writes (proposal, mission, three steps, six events), with no logic.
\set agent random(1, 50)
with p as (insert into p (agent_id, title, steps, status)
           values ('agent-' || :agent, 'Research and write up', '[{"kind": "crawl"}, {"kind": "analyze"}, {"kind": "write_content"}]', 'accepted')
           returning id),
     m as (insert into m (proposal_id, status) select id, 'approved' from p returning id),
     s as (insert into s (mission_id, position, kind, status)
           select m.id, k.n, k.kind, case when k.n = 0 then 'queued' else 'pending' end
             from m cross join (values (0, 'crawl'), (1, 'analyze'), (2, 'write_content')) as k(n, kind) returning id)
insert into e (type, tags, payload)
select t, array[t, split_part(t, ':', 1), split_part(t, ':', 2)], '{}'::jsonb
  from unnest(array['proposal:created', 'proposal:accepted', 'mission:approved', 'step:queued', 'step:pending', 'step:pending']) t;
