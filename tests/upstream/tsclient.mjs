// tsclient.mjs: the official MCP TypeScript SDK clients against the gateway's
// /mcp, driven by tests/mcp_typescript_test.go (issue 13 item 7).
//
//   node tsclient.mjs --url http://127.0.0.1:PORT/mcp --token JWT --revision REV
//                     [--echo everything-echo] [--sum everything-get-sum]
//                     [--long everything-trigger-long-running-operation]
//                     [--timeout 60]
//
// REV 2025-03-26, 2025-06-18 and 2025-11-25 use @modelcontextprotocol/sdk 1.x
// (Client + StreamableHTTPClientTransport, a session opened by initialize);
// 2026-07-28 uses @modelcontextprotocol/client 2.x pinned to that revision
// (no initialize, no session, _meta on every request).
//
// The 1.x Client always asks initialize for its LATEST_PROTOCOL_VERSION
// (2025-11-25) and has no option to ask for another: for 2025-06-18 and
// 2025-03-26 the transport's fetch (an option of the SDK) rewrites
// params.protocolVersion of the initialize request, and the SDK then speaks
// the revision the server echoes (it is in its SUPPORTED_PROTOCOL_VERSIONS).
//
// Steps, with lines on stdout for the driver (one line each, nothing else is
// printed on stdout):
//   1. connect, list the tools, call echo and get-sum, a streamed call of
//      the long-running tool (4 steps) with onprogress;
//   2. print READY-FOR-RECYCLE, wait for a line on stdin;
//   3. a streamed call (6 steps over 3 s); print STREAMING on its first
//      progress notification (the driver then recycles the workers with
//      SIGHUP), check that it ends with every notification, once and in
//      order, and its result; print STREAM-DONE, wait for a line on stdin
//      (the driver waits until the old workers exited);
//   4. list, call echo and a short streamed call again (new workers);
//   5. print SUMMARY {json} and exit 0.
// Any failure: a message on stderr and exit 1. Node 20 or later is required
// (the engines of both packages: sdk >=18, client >=20).

import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';

const MIN_NODE = 20;
const major = Number(process.versions.node.split('.')[0]);
if (!(major >= MIN_NODE)) {
    fail(`Node ${MIN_NODE} or later is required (the MCP TypeScript SDKs' engines); this is Node ${process.versions.node}`);
}

function fail(msg) {
    process.stderr.write(`tsclient: FAIL: ${msg}\n`);
    process.exit(1);
}

function parseArgs(argv) {
    const a = {
        echo: 'everything-echo',
        sum: 'everything-get-sum',
        long: 'everything-trigger-long-running-operation',
        timeout: '60'
    };
    for (let i = 0; i < argv.length; i += 2) {
        if (!argv[i].startsWith('--') || i + 1 >= argv.length) {
            fail(`bad arguments near ${JSON.stringify(argv[i])}`);
        }
        a[argv[i].slice(2)] = argv[i + 1];
    }
    for (const k of ['url', 'token', 'revision']) {
        if (!a[k]) fail(`--${k} is required`);
    }
    return a;
}

const args = parseArgs(process.argv.slice(2));
const MODERN = '2026-07-28';
const SESSION_REVISIONS = ['2025-03-26', '2025-06-18', '2025-11-25'];
if (args.revision !== MODERN && !SESSION_REVISIONS.includes(args.revision)) {
    fail(`unknown revision ${args.revision}`);
}
const modern = args.revision === MODERN;
setTimeout(() => fail(`not done after ${args.timeout} s`), Number(args.timeout) * 1000).unref();

function pkgVersion(name) {
    const url = new URL(`./node_modules/${name}/package.json`, import.meta.url);
    try {
        return JSON.parse(readFileSync(url, 'utf8')).version;
    } catch (e) {
        fail(`${name} is not installed under tests/upstream (${e.message}): run make mcp-servers`);
    }
}

// Every HTTP request the SDK makes, as seen by its fetch.
const requests = [];
let phase = 'connect';
async function recordingFetch(input, init = {}) {
    const headers = new Headers(init.headers);
    const rec = {
        phase,
        method: init.method ?? 'GET',
        lastEventId: headers.get('last-event-id') ?? undefined,
        sessionId: headers.get('mcp-session-id') ?? undefined,
        protocolVersion: headers.get('mcp-protocol-version') ?? undefined
    };
    let body = init.body;
    if (typeof body === 'string') {
        try {
            const msg = JSON.parse(body);
            rec.rpc = msg.method ?? (msg.result !== undefined || msg.error !== undefined ? 'response' : undefined);
            // The 1.x Client asks for its latest revision: ask for the one wanted.
            if (!modern && msg.method === 'initialize' && msg.params?.protocolVersion !== args.revision) {
                msg.params.protocolVersion = args.revision;
                body = JSON.stringify(msg);
                rec.rewritten = true;
            }
        } catch {
            // not JSON: left alone
        }
    }
    requests.push(rec);
    const resp = await fetch(input, { ...init, body });
    rec.status = resp.status;
    rec.contentType = resp.headers.get('content-type') ?? undefined;
    const sid = resp.headers.get('mcp-session-id');
    if (sid) rec.newSessionId = sid;
    return resp;
}

const transportErrors = [];
const sdk = modern ? '@modelcontextprotocol/client' : '@modelcontextprotocol/sdk';
const sdkVersion = pkgVersion(sdk);
const requestInit = { headers: { Authorization: `Bearer ${args.token}` } };
let client, transport;
try {
    if (modern) {
        const m = await import('@modelcontextprotocol/client');
        transport = new m.StreamableHTTPClientTransport(new URL(args.url), { requestInit, fetch: recordingFetch });
        client = new m.Client(
            { name: 'mcpgateway-tsclient', version: '1.0.0' },
            { versionNegotiation: { mode: { pin: MODERN } } }
        );
    } else {
        const { Client } = await import('@modelcontextprotocol/sdk/client/index.js');
        const { StreamableHTTPClientTransport } = await import('@modelcontextprotocol/sdk/client/streamableHttp.js');
        transport = new StreamableHTTPClientTransport(new URL(args.url), { requestInit, fetch: recordingFetch });
        client = new Client({ name: 'mcpgateway-tsclient', version: '1.0.0' });
    }
} catch (e) {
    fail(`load ${sdk}: ${e.message} (run make mcp-servers)`);
}

const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function handshake(line) {
    process.stdout.write(line + '\n');
    const { done } = await stdinLines.next();
    if (done) fail(`stdin closed after ${line}`);
}

function text(result, what) {
    if (result?.isError) fail(`${what}: the tool answered an error: ${JSON.stringify(result)}`);
    const t = result?.content?.[0]?.text;
    if (typeof t !== 'string') fail(`${what}: no text content: ${JSON.stringify(result)}`);
    return t;
}

function want(cond, msg) {
    if (!cond) fail(msg);
}

async function listTools(what) {
    const res = modern ? await client.listTools(undefined, { cacheMode: 'refresh' }) : await client.listTools();
    const names = res.tools.map(t => t.name);
    for (const n of [args.echo, args.sum, args.long]) {
        want(names.includes(n), `${what}: tools/list has no ${n}: ${names.join(' ')}`);
    }
    return names.length;
}

async function echo(what, message) {
    const t = text(await client.callTool({ name: args.echo, arguments: { message } }), what);
    want(t === `Echo: ${message}`, `${what}: ${args.echo} answered ${JSON.stringify(t)}`);
}

// streamed calls the long-running tool with a progress callback; onFirst
// runs on the first progress notification. It returns the progress values
// in the order they came, and checks them and the result.
async function streamed(what, duration, steps, onFirst) {
    const progress = [];
    const tokens = [];
    const callOptions = {
        timeout: 30000,
        onprogress: p => {
            progress.push(p.progress);
            if (progress.length === 1) onFirst?.();
        },
        // 1.x: every SSE event id of this call's streams (resumed ones too).
        onresumptiontoken: id => tokens.push(id)
    };
    const params = { name: args.long, arguments: { duration, steps } };
    const res = modern ? await client.callTool(params, callOptions) : await client.callTool(params, undefined, callOptions);
    const t = text(res, what);
    want(t.includes('Long running operation completed'), `${what}: result ${JSON.stringify(t)}`);
    // The SDKs call onprogress as the notifications arrive, before the response.
    const expect = Array.from({ length: steps }, (_, i) => i + 1);
    want(JSON.stringify(progress) === JSON.stringify(expect),
        `${what}: progress ${JSON.stringify(progress)}, want ${JSON.stringify(expect)} (each once, in order)`);
    return { progress, tokens };
}

const started = Date.now();
const ms = {};
try {
    client.onerror = e => transportErrors.push(String(e?.message ?? e));
    await client.connect(transport);
    const negotiated = modern ? client.getNegotiatedProtocolVersion() : transport.protocolVersion;
    want(negotiated === args.revision, `negotiated ${negotiated}, want ${args.revision}`);
    ms.connect = Date.now() - started;

    phase = 'before';
    const tools = await listTools('first list');
    await echo('first echo', 'hello');
    const sum = text(await client.callTool({ name: args.sum, arguments: { a: 2, b: 3 } }), 'get-sum');
    want(sum === 'The sum of 2 and 3 is 5.', `get-sum answered ${JSON.stringify(sum)}`);
    const first = await streamed('first streamed call', 1, 4);
    ms.before = Date.now() - started;

    await handshake('READY-FOR-RECYCLE');
    phase = 'recycle';
    const t0 = Date.now();
    const recycled = await streamed('streamed call across the recycling', 3, 6, () => process.stdout.write('STREAMING\n'));
    ms.recycledCall = Date.now() - t0;
    const callIds = new Set(recycled.tokens);
    const resumes = requests.filter(r => r.phase === 'recycle' && r.method === 'GET' && r.lastEventId !== undefined);
    await handshake('STREAM-DONE');

    phase = 'after';
    const t1 = Date.now();
    await listTools('list after the recycling');
    await echo('echo after the recycling', 'again');
    const final = await streamed('streamed call after the recycling', 1, 2);
    ms.after = Date.now() - t1;

    const sessionIds = [...new Set(requests.flatMap(r => [r.sessionId, r.newSessionId]).filter(Boolean))];
    const summary = {
        revision: args.revision,
        sdk: `${sdk}@${sdkVersion}`,
        node: process.versions.node,
        negotiated,
        tools,
        initializeRequests: requests.filter(r => r.rpc === 'initialize').length,
        initializeRewritten: requests.some(r => r.rewritten),
        discoverRequests: requests.filter(r => r.rpc === 'server/discover').length,
        sessionIds: sessionIds.length,
        protocolVersionHeaders: [...new Set(requests.map(r => r.protocolVersion).filter(Boolean))],
        progress: { first: first.progress, recycled: recycled.progress, final: final.progress },
        recycledEventIds: recycled.tokens.length,
        // GET + Last-Event-ID during the recycled call; ofCall: naming an event of that call.
        resumes: resumes.length,
        resumesOfCall: resumes.filter(r => callIds.has(r.lastEventId)).length,
        resumeStatuses: resumes.map(r => r.status),
        requests: requests.length,
        failedRequests: requests.filter(r => r.status === undefined || r.status >= 400)
            .map(r => `${r.phase} ${r.method} ${r.rpc ?? ''} ${r.status ?? 'no answer'}`),
        transportErrors,
        ms: { ...ms, total: Date.now() - started }
    };
    if (!modern) await transport.terminateSession(); // DELETE: 204 expected, a failure throws
    await client.close();
    if (process.env.TSCLIENT_DEBUG) process.stderr.write(requests.map(r => JSON.stringify(r)).join('\n') + '\n');
    process.stdout.write('SUMMARY ' + JSON.stringify(summary) + '\n');
    process.exit(0);
} catch (e) {
    fail(`${phase}: ${e?.stack ?? e}`);
}
