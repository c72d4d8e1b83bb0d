-- Opt-in: Supabase Cron calls the ops-heartbeat Edge Function through pg_net every minute, instead of
-- running `select public.ops_heartbeat()` in the database (the default schedule, agent-ops-heartbeat).
-- Supabase's own pattern for scheduling Edge Functions; not a migration, so `db push` never runs it. Run it
-- once (SQL editor or psql, as postgres) after these steps:
--
--   npx supabase functions deploy ops-heartbeat
--   npx supabase secrets set OPS_KEY=<key>                  -- e.g. openssl rand -hex 32
--   select vault.create_secret('https://<project-ref>.supabase.co', 'project_url');   -- if not there yet
--   select vault.create_secret('<the same key>', 'ops_key');
--
-- The job reads both secrets from Vault each time it runs: neither is written into cron.job, and rotating
-- the key is `supabase secrets set OPS_KEY=<new>` plus
-- `select vault.update_secret((select id from vault.secrets where name = 'ops_key'), '<new>');`.
--
-- It unschedules agent-ops-heartbeat, so one driver runs; keeping both would be safe (the heartbeat is
-- single-flight, a second call at the same time returns {"skipped": "busy"}), only wasteful. To go back:
--   select cron.unschedule('agent-ops-heartbeat-edge');
--   select cron.schedule('agent-ops-heartbeat', '* * * * *', 'select public.ops_heartbeat()');
-- Re-running this file is harmless. It changes nothing (and says what is missing) unless pg_cron, Vault and
-- both secrets are there; it enables pg_net when that is missing.
-- The answers pg_net receives are in net._http_response for a few hours (status 200, or 401 for a wrong key).

do $edge$
declare
  missing text;
begin
  if not exists (select 1 from pg_catalog.pg_extension where extname = 'pg_cron') then
    raise exception 'pg_cron is not enabled: enable it (Database > Extensions > pg_cron) and run this again';
  end if;
  if pg_catalog.to_regclass('vault.decrypted_secrets') is null then
    raise exception 'Supabase Vault (vault.decrypted_secrets) is not available in this database';
  end if;
  select pg_catalog.string_agg(pg_catalog.format('select vault.create_secret(%L, %L);', hint, wanted), ' ')
    into missing
    from (values ('project_url', 'https://<project-ref>.supabase.co'), ('ops_key', '<OPS_KEY>')) w(wanted, hint)
   where not exists (select 1 from vault.decrypted_secrets s
                      where s.name = w.wanted and coalesce(s.decrypted_secret, '') <> '');
  if missing is not null then
    raise exception 'missing Vault secrets; create them first: %', missing;
  end if;
  if pg_catalog.to_regprocedure('net.http_post(text, jsonb, jsonb, jsonb, integer)') is null then
    create extension if not exists pg_net;
  end if;

  perform cron.schedule('agent-ops-heartbeat-edge', '* * * * *', $job$
    select net.http_post(
      url := pg_catalog.rtrim((select decrypted_secret from vault.decrypted_secrets where name = 'project_url'), '/')
             || '/functions/v1/ops-heartbeat',
      headers := pg_catalog.jsonb_build_object(
        'Content-Type', 'application/json',
        'Authorization', 'Bearer ' || (select decrypted_secret from vault.decrypted_secrets where name = 'ops_key')),
      body := '{}'::jsonb,
      timeout_milliseconds := 30000
    ) as request_id
  $job$);
  if exists (select 1 from cron.job where jobname = 'agent-ops-heartbeat') then
    perform cron.unschedule('agent-ops-heartbeat');
    raise notice 'agent-ops-heartbeat (the direct SQL schedule) is unscheduled: the Edge Function drives the heartbeat';
  end if;
end
$edge$;
