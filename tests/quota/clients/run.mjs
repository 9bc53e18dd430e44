// Drives berth's quota proxy with the official SDKs, configured only by the environment the
// provisioner gave the tenant (ANTHROPIC_BASE_URL/_API_KEY, OPENAI_BASE_URL/_API_KEY).
// Writes {scenario: result} as JSON to the file named by argv[2] (atomically, via rename).
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { writeFileSync, renameSync } from 'node:fs';

const out = process.argv[2];
const results = {};
const anthropic = new Anthropic({ maxRetries: 0, defaultHeaders: { 'anthropic-beta': 'berth-test-beta' } });
const openai = new OpenAI({ maxRetries: 0 });
const user = (text) => [{ role: 'user', content: text }];

async function run(name, fn) {
  try {
    results[name] = await fn();
  } catch (e) {
    results[name] = { error: String(e), status: e.status ?? null, type: e.error?.error?.type ?? e.error?.type ?? null,
                      retry_after: e.headers?.['retry-after'] ?? null };
  }
}

await run('plain', async () => {
  const m = await anthropic.messages.create({ model: 'claude-test', max_tokens: 100, messages: user('hello') });
  return { text: m.content[0].text, usage: m.usage };
});
await run('stream', async () => {
  const s = anthropic.messages.stream({ model: 'claude-test', max_tokens: 100, messages: user('stream [long:5]') });
  const types = [];
  s.on('streamEvent', (ev) => types.push(ev.type));
  const m = await s.finalMessage();
  return { text: m.content[0].text, usage: m.usage, types };
});
await run('tool', async () => {
  const m = await anthropic.messages.create({
    model: 'claude-test', max_tokens: 100, messages: user('weather [tool]'),
    tools: [{ name: 'get_weather', description: 'weather', input_schema: { type: 'object', properties: { location: { type: 'string' } } } }],
  });
  return { type: m.content[0].type, input: m.content[0].input, stop: m.stop_reason };
});
await run('tool_stream', async () => {
  const s = anthropic.messages.stream({
    model: 'claude-test', max_tokens: 100, messages: user('weather [tool]'),
    tools: [{ name: 'get_weather', description: 'weather', input_schema: { type: 'object', properties: { location: { type: 'string' } } } }],
  });
  const m = await s.finalMessage();
  return { type: m.content[0].type, input: m.content[0].input };
});
await run('count_tokens', async () => anthropic.messages.countTokens({ model: 'claude-test', messages: user('count me') }));
await run('overloaded', async () => anthropic.messages.create({ model: 'claude-test', max_tokens: 10, messages: user('[529]') }));
await run('rate_limited', async () => anthropic.messages.create({ model: 'claude-test', max_tokens: 10, messages: user('[429]') }));
await run('unpriced', async () => anthropic.messages.create({ model: 'claude-unknown', max_tokens: 10, messages: user('x') }));
await run('chat', async () => {
  const c = await openai.chat.completions.create({ model: 'gpt-test', messages: user('hello') });
  return { text: c.choices[0].message.content, usage: c.usage };
});
await run('chat_stream', async () => {
  const s = await openai.chat.completions.create({ model: 'gpt-test', messages: user('hi [long:4]'), stream: true });
  let text = '';
  for await (const ch of s) text += ch.choices[0]?.delta?.content ?? '';
  return { text };
});
await run('chat_tool', async () => {
  const c = await openai.chat.completions.create({
    model: 'gpt-test', messages: user('weather [tool]'),
    tools: [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: {} } } }],
  });
  return { name: c.choices[0].message.tool_calls[0].function.name, args: c.choices[0].message.tool_calls[0].function.arguments };
});
await run('responses', async () => {
  const r = await openai.responses.create({ model: 'gpt-test', input: 'hello' });
  return { text: r.output_text, usage: r.usage };
});
await run('responses_stream', async () => {
  const s = await openai.responses.create({ model: 'gpt-test', input: 'hi [long:3]', stream: true });
  const types = [];
  let usage = null;
  for await (const ev of s) {
    types.push(ev.type);
    if (ev.type === 'response.completed') usage = ev.response.usage;
  }
  return { types, usage };
});
await run('usage', async () => {
  const r = await fetch(process.env.ANTHROPIC_BASE_URL + '/usage', { headers: { 'x-api-key': process.env.ANTHROPIC_API_KEY } });
  return await r.json();
});
writeFileSync(out + '.tmp', JSON.stringify(results));
renameSync(out + '.tmp', out);
