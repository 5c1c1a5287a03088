// test/http/openapi-check.mjs: checks one HTTP answer against the OpenAPI
// 3.1 document (src/delq-openapi.json) with Ajv's JSON Schema 2020-12, the
// dialect of OpenAPI 3.1.  Shared by api-client.mjs (the Node client's own
// answers) and check-recorded.mjs (the answers curl got in
// test/t/080_http_api.pl).
import { createRequire } from 'node:module';

const require = createRequire(process.env.DELQ_NODE_MODULES + '/');
const Ajv2020 = require('ajv/dist/2020').default;
const addFormats = require('ajv-formats').default;

const esc = (s) => s.replace(/~/g, '~0').replace(/\//g, '~1');

export function openapiChecker(doc) {
	const ajv = new Ajv2020({ strict: false, allErrors: true });
	addFormats(ajv);
	ajv.addSchema(doc, 'openapi.json');

	// follow $refs within the document (responses are referenced)
	const deref = (obj) => {
		while (obj && obj.$ref)
			obj = obj.$ref.slice(2).split('/')
				.map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'))
				.reduce((o, k) => o[k], doc);
		return obj;
	};

	// The template of the document's paths that path (no query) matches.
	const templates = Object.keys(doc.paths).map((t) => ({
		t, re: new RegExp('^' + t.replace(/\{[^}]+\}/g, '[^/]+') + '$'),
	}));
	const templateOf = (path) => templates.find((x) => x.re.test(path))?.t;

	// Problems with one answer ([] when it is as documented): its status
	// must be documented for the operation, its content type too, and a
	// JSON body must match the schema.
	function check(method, template, status, contentType, text) {
		const op = doc.paths[template]?.[method.toLowerCase()];
		if (!op)
			return [`${method} ${template} is not in the document`];
		const response = deref(op.responses[String(status)]);
		if (!response)
			return [`status ${status} is not documented`];
		const ctype = (contentType || '').split(';')[0].trim();
		if (!response.content?.[ctype])
			return [`content type ${ctype} is not documented`];
		if (!ctype.endsWith('json'))
			return [];
		let body;
		try {
			body = JSON.parse(text);
		} catch (e) {
			return ['the body is not JSON'];
		}
		const ref = op.responses[String(status)].$ref;
		const pointer = ref
			? `${ref}/content/${esc(ctype)}/schema`
			: `#/paths/${esc(template)}/${method.toLowerCase()}/responses/${status}/content/${esc(ctype)}/schema`;
		const validate = ajv.getSchema('openapi.json' + pointer);
		return validate(body) ? [] : validate.errors.map((e) => `${e.instancePath} ${e.message}`);
	}

	return { check, templateOf };
}
