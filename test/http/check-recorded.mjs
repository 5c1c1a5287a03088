// test/http/check-recorded.mjs FILE: checks answers recorded as JSON lines
// ({method, path, status, content_type, body}) against the OpenAPI document
// (DELQ_OPENAPI, a file).  Answers outside the document's operations (an
// unknown route: 404; a method a route does not have: 405) and calls that
// got no answer are counted, not checked.  Prints TAP; exits 1 on a problem.
import { readFileSync } from 'node:fs';
import { openapiChecker } from './openapi-check.mjs';

const doc = JSON.parse(readFileSync(process.env.DELQ_OPENAPI, 'utf8'));
const { check, templateOf } = openapiChecker(doc);
let n = 0;
let failed = 0;
let outside = 0;
for (const line of readFileSync(process.argv[2], 'utf8').split('\n')) {
	if (!line)
		continue;
	const a = JSON.parse(line);
	const path = a.path.split('?')[0];
	const template = templateOf(path);
	if (!a.status || !template || !doc.paths[template][a.method.toLowerCase()]) {
		outside++;
		continue;
	}
	const problems = check(a.method, template, a.status, a.content_type, a.body);
	n++;
	if (problems.length) {
		failed++;
		console.log(`not ok ${n} - ${a.method} ${a.path} ${a.status}`);
		console.log('# ' + problems.join('; ') + ' | ' + (a.body || '').slice(0, 300));
	} else {
		console.log(`ok ${n} - ${a.method} ${template} ${a.status}`);
	}
}
console.log(`# ${outside} answers outside the document's operations or without an answer`);
console.log(`1..${n}`);
process.exit(failed || n === 0 ? 1 : 0);
