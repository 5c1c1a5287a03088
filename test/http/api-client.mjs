// test/http/api-client.mjs: the HTTP API seen by a Node client (fetch),
// every answer validated against the OpenAPI document the server serves
// (src/delq-openapi.json), with Ajv (JSON Schema 2020-12, as OpenAPI 3.1).
// Run by test/t/080_http_api.pl, which sets up the server, tokens and hooks
// and passes them in the environment; prints TAP, exits 1 on a failure.
//
//   DELQ_URL             base URL of the server
//   DELQ_NODE_MODULES    the folder test/http/npm-install printed
//   DELQ_TOKEN_APP, DELQ_TOKEN_OP, DELQ_TOKEN_MON
//                        tokens of a submitter, an operator, a metrics role
//   DELQ_HOOK_SW, DELQ_HOOK_SW_SECRET         a standard_webhooks hook
//   DELQ_HOOK_SHOPIFY, DELQ_HOOK_SHOPIFY_SECRET  a shopify hook
//   DELQ_CONFIRM_URL     a confirm_url a callback destination received
import { createHmac, randomUUID } from 'node:crypto';
import { openapiChecker } from './openapi-check.mjs';

const env = process.env;
const base = env.DELQ_URL;
let n = 0;
let failed = 0;

function ok(cond, what, extra) {
	n++;
	if (cond) {
		console.log(`ok ${n} - ${what}`);
	} else {
		failed++;
		console.log(`not ok ${n} - ${what}`);
		if (extra !== undefined)
			console.log('# ' + JSON.stringify(extra).slice(0, 800));
	}
}

const docRes = await fetch(base + '/v1/openapi.json');
const doc = await docRes.json();
const { check } = openapiChecker(doc);

// Validate one answer against the document; returns the parsed body.
function validate(method, template, res, text) {
	const problems = check(method, template, res.status, res.headers.get('content-type'), text);
	ok(problems.length === 0, `${method} ${template} ${res.status}: matches the document`,
		problems.length ? { problems, text } : undefined);
	try {
		return JSON.parse(text);
	} catch (e) {
		return undefined;
	}
}

// One call: returns { res, body } after validating the answer.
async function call(method, template, path, { token, basic, json, raw, headers = {} } = {}) {
	const h = { ...headers };
	if (token)
		h.authorization = `Bearer ${token}`;
	if (basic)
		h.authorization = 'Basic ' + Buffer.from(`dpo:${basic}`).toString('base64');
	let body;
	if (json !== undefined) {
		body = JSON.stringify(json);
		h['content-type'] = 'application/json';
	}
	if (raw !== undefined) {
		body = raw;
		h['content-type'] ??= 'application/json';
	}
	const res = await fetch(base + path, { method, headers: h, body });
	const text = await res.text();
	const parsed = validate(method, template, res, text);
	return { res, body: parsed, text };
}

const app = env.DELQ_TOKEN_APP;
const op = env.DELQ_TOKEN_OP;
const mon = env.DELQ_TOKEN_MON;
const ext = 'node-' + randomUUID();

// submit, replay, Idempotency-Key
let r = await call('POST', '/v1/requests', '/v1/requests',
	{ token: app, json: { subject: 'node@example.com', source: 'node', external_id: ext, attributes: { plan: 'pro' } } });
ok(r.res.status === 201, 'first submit answers 201', r.text);
ok(r.res.headers.get('location') === `/v1/requests/${r.body.id}`, 'Location names the new request');
ok(!('subject' in r.body), 'a submitter does not get the subject back');
const id = r.body.id;
r = await call('POST', '/v1/requests', '/v1/requests',
	{ token: app, json: { subject: 'node@example.com', source: 'node', external_id: ext } });
ok(r.res.status === 200 && r.body.id === id, 'a replay answers 200 with the first id');
const key = 'idem-' + randomUUID();
r = await call('POST', '/v1/requests', '/v1/requests',
	{ token: app, json: { subject: 'key@example.com', source: 'node' }, headers: { 'idempotency-key': key } });
ok(r.res.status === 201, 'Idempotency-Key: first 201');
const keyed = r.body.id;
r = await call('POST', '/v1/requests', '/v1/requests',
	{ token: app, json: { subject: 'key@example.com', source: 'node' }, headers: { 'idempotency-key': key } });
ok(r.res.status === 200 && r.body.id === keyed, 'Idempotency-Key: replay 200, same id');

// errors of submit
r = await call('POST', '/v1/requests', '/v1/requests', { token: app, raw: '{"subject": ' });
ok(r.res.status === 400 && r.body.sqlstate === '22P02', 'bad JSON: 400, 22P02');
r = await call('POST', '/v1/requests', '/v1/requests', { token: app, json: { subject: 42, source: 'node' } });
ok(r.res.status === 400 && r.body.sqlstate === '22023' && r.body.hint, 'wrong type: 400, 22023 with a hint');
r = await call('POST', '/v1/requests', '/v1/requests', { token: app, json: { source: 'node' } });
ok(r.res.status === 400 && r.body.sqlstate === '22004', 'missing subject: 400, 22004');
r = await call('POST', '/v1/requests', '/v1/requests', { token: app, json: { subject: 'x', source: 'Not A Source' } });
ok(r.res.status === 400, 'invalid source: 400');
r = await call('POST', '/v1/requests', '/v1/requests',
	{ token: app, raw: JSON.stringify({ subject: 'x', source: 'node' }), headers: { 'content-type': 'text/plain' } });
ok(r.res.status === 415, 'not JSON: 415');
r = await call('POST', '/v1/requests', '/v1/requests',
	{ token: app, raw: JSON.stringify({ subject: 'x'.repeat(70000), source: 'node' }) });
ok(r.res.status === 413, 'a body over 64 kB: 413');
r = await call('POST', '/v1/requests', '/v1/requests', { token: 'delq_wrong', json: { subject: 'x', source: 'node' } });
ok(r.res.status === 401 && r.res.headers.get('www-authenticate')?.startsWith('Bearer'), 'a wrong token: 401');
r = await call('POST', '/v1/requests', '/v1/requests', { json: { subject: 'x', source: 'node' } });
ok(r.res.status === 401, 'no token: 401');
r = await call('POST', '/v1/requests', '/v1/requests', { token: mon, json: { subject: 'x', source: 'node' } });
ok(r.res.status === 403 && r.body.sqlstate === '42501', 'a metrics token cannot submit: 403');

// read
r = await call('GET', '/v1/requests/{id}', `/v1/requests/${id}`, { token: app });
ok(r.res.status === 200 && r.body.id === id && !('subject' in r.body), 'GET a request as submitter: no subject');
r = await call('GET', '/v1/requests/{id}', `/v1/requests/${id}`, { token: op });
ok(r.res.status === 200 && r.body.subject === 'node@example.com', 'GET a request as operator: with subject');
r = await call('GET', '/v1/requests/{id}', `/v1/requests/${randomUUID()}`, { token: op });
ok(r.res.status === 404 && r.body.sqlstate === '42704', 'unknown id: 404');
r = await call('GET', '/v1/requests/{id}', '/v1/requests/not-a-uuid', { token: op });
ok(r.res.status === 400, 'malformed id: 400');

// list, keyset pagination
r = await call('GET', '/v1/requests', '/v1/requests?source=node&limit=1', { token: app });
ok(r.res.status === 200 && r.body.items.length === 1 && r.body.next, 'list: one item and a next cursor');
const first = r.body.items[0].id;
r = await call('GET', '/v1/requests', `/v1/requests?source=node&limit=1&after=${r.body.next}`, { token: app });
ok(r.res.status === 200 && r.body.items.length === 1 && r.body.items[0].id !== first, 'list: the next page');
ok(r.body.items.every((i) => !('subject' in i)), 'list: no subjects for a submitter');
r = await call('GET', '/v1/requests', '/v1/requests?limit=abc', { token: app });
ok(r.res.status === 400, 'list: a bad limit is 400');

// operator actions
r = await call('POST', '/v1/requests/{id}/approve', `/v1/requests/${id}/approve`, { token: app });
ok(r.res.status === 403, 'a submitter cannot approve: 403');
r = await call('POST', '/v1/requests/{id}/approve', `/v1/requests/${id}/approve`, { token: op });
ok(r.res.status === 409 && r.body.sqlstate === '55000', 'approve a request that is not held: 409');
r = await call('POST', '/v1/requests/{id}/extend', `/v1/requests/${id}/extend`,
	{ token: op, json: { by: '14 days', reason: 'many systems' } });
ok(r.res.status === 200 && r.body.id === id, 'extend: 200');
r = await call('POST', '/v1/requests/{id}/extend', `/v1/requests/${id}/extend`,
	{ token: op, json: { by: '14 days', reason: 'again' } });
ok(r.res.status === 409, 'extend twice: 409');
r = await call('POST', '/v1/requests/{id}/reject', `/v1/requests/${keyed}/reject`, { token: op, json: {} });
ok(r.res.status === 400 && r.body.sqlstate === '22004', 'reject without a reason: 400');
r = await call('POST', '/v1/requests/{id}/reject', `/v1/requests/${keyed}/reject`,
	{ token: op, json: { reason: 'duplicate account' } });
ok(r.res.status === 200 && r.body.status === 'rejected', 'reject: 200, rejected');
r = await call('GET', '/v1/requests/{id}/receipt', `/v1/requests/${id}/receipt`, { token: op });
ok(r.res.status === 200 && r.body.type === 'delq.receipt', 'receipt: 200');
r = await call('GET', '/v1/requests/{id}/receipt', `/v1/requests/${id}/receipt`, { token: app });
ok(r.res.status === 403, 'a submitter cannot read receipts: 403');

// operations
r = await call('GET', '/v1/healthz', '/v1/healthz');
ok(r.res.status === 200 && r.body.status === 'ok', 'healthz: 200');
r = await call('GET', '/v1/openapi.json', '/v1/openapi.json');
ok(r.res.status === 200 && r.body.openapi === '3.1.0', 'openapi.json: 200');
r = await call('GET', '/metrics', '/metrics', { token: mon });
ok(r.res.status === 200 && /^delq_requests\{status="forwarding",archived="false"\} \d+$/m.test(r.text),
	'metrics: 200 in the text format');
r = await call('GET', '/metrics', '/metrics', { token: app });
ok(r.res.status === 403, 'a submitter cannot read metrics: 403');
r = await call('GET', '/', '/', { basic: op });
ok(r.res.status === 200 && r.text.includes('<h1>delq status</h1>') && !r.text.includes('<script'),
	'status page: 200, HTML without scripts');
r = await call('GET', '/', '/', { basic: app });
ok(r.res.status === 403, 'status page: a submitter gets 403');
r = await call('GET', '/', '/');
ok(r.res.status === 401 && r.res.headers.get('www-authenticate')?.startsWith('Basic'), 'status page: 401 asks for Basic');

// inbound hooks
if (env.DELQ_HOOK_SW) {
	const body = JSON.stringify({ type: 'user.deleted', data: { email: 'sw-node@example.com', plan: 'free' } });
	const wid = 'msg_' + randomUUID();
	const ts = Math.floor(Date.now() / 1000).toString();
	const keyBytes = Buffer.from(env.DELQ_HOOK_SW_SECRET.slice(6), 'base64');
	const sig = 'v1,' + createHmac('sha256', keyBytes).update(`${wid}.${ts}.${body}`).digest('base64');
	const headers = { 'webhook-id': wid, 'webhook-timestamp': ts, 'webhook-signature': sig };
	const path = `/v1/hooks/${env.DELQ_HOOK_SW}`;
	r = await call('POST', '/v1/hooks/{name}', path, { raw: body, headers });
	ok(r.res.status === 201, 'standard webhook: 201', r.text);
	const hookId = r.body.id;
	r = await call('POST', '/v1/hooks/{name}', path, { raw: body, headers });
	ok(r.res.status === 200 && r.body.id === hookId, 'standard webhook replayed: 200, same request');
	r = await call('POST', '/v1/hooks/{name}', path,
		{ raw: body, headers: { ...headers, 'webhook-signature': 'v1,' + Buffer.alloc(32).toString('base64') } });
	ok(r.res.status === 401 && r.body.sqlstate === '28000', 'standard webhook, bad signature: 401');
	r = await call('POST', '/v1/hooks/{name}', '/v1/hooks/no_such_hook', { raw: body, headers });
	ok(r.res.status === 404, 'unknown hook: 404');
}
if (env.DELQ_HOOK_SHOPIFY) {
	// https://shopify.dev/docs/apps/build/compliance/privacy-law-compliance
	const body = JSON.stringify({
		shop_id: 954889, shop_domain: 'node-shop.myshopify.com',
		customer: { id: 191167, email: 'shopify-node@example.com', phone: '555-625-1199' },
		orders_to_redact: [299938, 280263, 220458],
	});
	const hmac = createHmac('sha256', env.DELQ_HOOK_SHOPIFY_SECRET).update(body).digest('base64');
	const headers = {
		'x-shopify-topic': 'customers/redact', 'x-shopify-hmac-sha256': hmac,
		'x-shopify-shop-domain': 'node-shop.myshopify.com', 'x-shopify-webhook-id': randomUUID(),
	};
	const path = `/v1/hooks/${env.DELQ_HOOK_SHOPIFY}`;
	r = await call('POST', '/v1/hooks/{name}', path, { raw: body, headers });
	ok(r.res.status === 201, 'shopify customers/redact: 201', r.text);
	r = await call('POST', '/v1/hooks/{name}', path, { raw: body, headers: { ...headers, 'x-shopify-hmac-sha256': 'AAAA' } });
	ok(r.res.status === 401, 'shopify, bad HMAC: 401');
}

// a callback destination's confirmation link
if (env.DELQ_CONFIRM_URL) {
	const path = new URL(env.DELQ_CONFIRM_URL).pathname;
	r = await call('POST', '/v1/confirm/{token}', path);
	ok(r.res.status === 200 && r.body.changed === true, 'confirm_url: 200, confirmed');
	r = await call('POST', '/v1/confirm/{token}', path);
	ok(r.res.status === 200 && r.body.changed === false, 'confirm_url again: 200, nothing changed');
	r = await call('POST', '/v1/confirm/{token}', path.slice(0, -2) + 'xx');
	ok(r.res.status === 404, 'a forged confirmation link: 404');
}

console.log(`1..${n}`);
process.exit(failed ? 1 : 0);
