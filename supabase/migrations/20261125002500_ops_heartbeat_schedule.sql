-- Supabase Cron: run ops_heartbeat() every minute, and clean pg_cron's own run log daily (pg_cron never
-- prunes cron.job_run_details). Guarded: where pg_cron is not available in this database (plain Postgres
-- without the extension, or a database other than cron.database_name) it only says so and changes
-- nothing; drive the heartbeat with `agent-ops heartbeat --every` or the HTTP endpoint instead.
-- cron.schedule upserts by job name, so re-running this is harmless.

do $schedule$
begin
  if not exists (select 1 from pg_catalog.pg_extension where extname = 'pg_cron') then
    if not exists (select 1 from pg_catalog.pg_available_extensions where name = 'pg_cron')
       or pg_catalog.current_setting('cron.database_name', true) is distinct from pg_catalog.current_database() then
      raise notice 'pg_cron is not available in database %: the heartbeat is not scheduled here',
        pg_catalog.current_database();
      return;
    end if;
    create extension pg_cron with schema pg_catalog;
  end if;
  perform cron.schedule('agent-ops-heartbeat', '* * * * *', 'select public.ops_heartbeat()');
  perform cron.schedule('agent-ops-cron-cleanup', '17 3 * * *',
    $job$delete from cron.job_run_details where end_time < now() - interval '7 days'$job$);
end
$schedule$;
