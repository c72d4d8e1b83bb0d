// ops-heartbeat: the heartbeat as a Supabase Edge Function, for Supabase Cron (through pg_net), any external
// scheduler or a person with curl. It is the seed's cron-hit endpoint (`agent-ops serve`'s
// /api/ops/heartbeat) without the always-on process; the rules stay in SQL (public.ops_heartbeat(),
// single-flight, one ops_action_runs row per run), so this file only checks the key and makes one call.
//
// - GET or POST with `Authorization: Bearer <OPS_KEY>`, compared in constant time; a missing or wrong key
//   gets 401, and while OPS_KEY is unset the function answers 503 and never runs the heartbeat.
// - The call goes through PostgREST as service_role (SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY are set by
//   the Edge runtime): 200 with the heartbeat's JSON, or 502 with a short message when the database call
//   fails. No answer and no log line ever holds a key.
// - One JSON log line per call: method, status, duration, and the run id or why it failed.
// - The gateway's JWT check is off for this function (supabase/config.toml: verify_jwt = false); the
//   OPS_KEY check above replaces it, so a scheduler needs no Supabase key at all.

import { createClient, type SupabaseClient } from "@supabase/supabase-js";

const FUNCTION = "ops-heartbeat";
// The heartbeat's own budgets are a few seconds; past this the call is abandoned (and reported as 502).
const CALL_TIMEOUT_MS = 30_000;
const HEADERS = {
  "Content-Type": "application/json; charset=utf-8",
  "Cache-Control": "no-store",
  "X-Content-Type-Options": "nosniff",
};

const encoder = new TextEncoder();
let client: SupabaseClient | undefined;

function reply(
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { ...HEADERS, ...headers },
  });
}

function bearerToken(request: Request): string | null {
  const header = request.headers.get("authorization") ?? "";
  const space = header.indexOf(" ");
  if (space < 0 || header.slice(0, space).toLowerCase() !== "bearer") {
    return null;
  }
  const token = header.slice(space + 1).trim();
  return token === "" ? null : token;
}

// Compares SHA-256 digests, so the time taken depends neither on where the keys differ nor on their lengths.
async function sameKey(given: string, expected: string): Promise<boolean> {
  const [a, b] = await Promise.all(
    [given, expected].map(async (key) =>
      new Uint8Array(
        await crypto.subtle.digest("SHA-256", encoder.encode(key)),
      )
    ),
  );
  let difference = 0;
  for (let i = 0; i < a.length; i++) {
    difference |= a[i] ^ b[i];
  }
  return difference === 0;
}

// Error text for the log only, with any secret this function knows cut out and the length capped.
function scrub(text: string): string {
  let clean = text;
  for (
    const secret of [
      Deno.env.get("OPS_KEY"),
      Deno.env.get("SUPABASE_SERVICE_ROLE_KEY"),
    ]
  ) {
    if (secret) {
      clean = clean.replaceAll(secret, "[redacted]");
    }
  }
  return clean.replace(/\s+/g, " ").slice(0, 300);
}

function database(): SupabaseClient | null {
  const url = Deno.env.get("SUPABASE_URL");
  const key = Deno.env.get("SUPABASE_SERVICE_ROLE_KEY");
  if (!url || !key) {
    return null;
  }
  client ??= createClient(url, key, {
    auth: {
      persistSession: false,
      autoRefreshToken: false,
      detectSessionInUrl: false,
    },
  });
  return client;
}

type Outcome = { response: Response; note: Record<string, unknown> };

async function heartbeat(request: Request): Promise<Outcome> {
  if (request.method !== "GET" && request.method !== "POST") {
    return {
      response: reply(405, { error: "method not allowed" }, {
        Allow: "GET, POST",
      }),
      note: {},
    };
  }
  const opsKey = Deno.env.get("OPS_KEY");
  if (!opsKey) {
    return {
      response: reply(503, {
        error: "OPS_KEY is not set: the heartbeat endpoint stays closed",
      }),
      note: { reason: "OPS_KEY unset" },
    };
  }
  const token = bearerToken(request);
  if (token === null || !(await sameKey(token, opsKey))) {
    return {
      response: reply(401, { error: "unauthorized" }, {
        "WWW-Authenticate": "Bearer",
      }),
      note: { reason: token === null ? "no key" : "wrong key" },
    };
  }
  const db = database();
  if (db === null) {
    return {
      response: reply(503, {
        error: "SUPABASE_URL or SUPABASE_SERVICE_ROLE_KEY is not set",
      }),
      note: { reason: "not configured" },
    };
  }
  try {
    const { data, error, status } = await db.rpc("ops_heartbeat")
      .abortSignal(AbortSignal.timeout(CALL_TIMEOUT_MS));
    if (error) {
      // A SQLSTATE or PostgREST code is safe to show; anything else stays in the log.
      const code = /^[A-Z0-9]{5}$|^PGRST\d{3}$/.test(error.code ?? "")
        ? error.code
        : null;
      // supabase-js puts a network failure's cause ("Connection refused") in the details.
      const cause = /Caused by: ([^\n]*)/.exec(error.details ?? "")?.[1];
      return {
        response: reply(502, { error: "the heartbeat call failed", code }),
        note: {
          code,
          upstream_status: status,
          reason: scrub([error.message, cause].filter(Boolean).join(": ")),
        },
      };
    }
    return {
      response: reply(200, data),
      note: {
        run_id: data?.run_id ?? null,
        ok: data?.ok ?? null,
        skipped: data?.skipped ?? null,
      },
    };
  } catch (error) {
    return {
      response: reply(502, { error: "the heartbeat call failed", code: null }),
      note: { reason: scrub(String(error)) },
    };
  }
}

Deno.serve(async (request: Request): Promise<Response> => {
  const started = performance.now();
  const { response, note } = await heartbeat(request);
  console.log(JSON.stringify({
    function: FUNCTION,
    method: request.method,
    status: response.status,
    ms: Math.round(performance.now() - started),
    ...note,
  }));
  return response;
});
