// What SillyTavern's page sends to its own server, computed by SillyTavern's own
// functions (public/scripts/textgen-settings.js, kai-settings.js, tokenizers.js)
// loaded under node with the browser-only modules stubbed (loader_hooks.mjs).
//
// Usage: node client_requests.mjs ST_DIR < scenario.json > requests.json
//
// scenario: {
//   main_api: "textgenerationwebui" | "kobold",
//   type: "tabby" | "koboldcpp" | "llamacpp" | "ooba" | "vllm" | ...,  (textgen)
//   server_url: "http://127.0.0.1:5000/",       the URL typed in the API box
//   banned_tokens: "...",                         the "Banned tokens/strings" box
//   streaming: bool, n: int, amount_gen: int, prompt: "...",
//   tokenizer: 99 | 6,                            power_user.tokenizer (BEST_MATCH | API_CURRENT)
//   online_status: "model-id",                    what the status call set
//   kobold_versions: ["1.2.5", "KoboldCpp"],       what /api/backends/kobold/status returned
//   token_ids: {"text": [ids]}                    answers of the tokenize calls
//   models: ["id", ...]                           the ids the status call listed
//   settings: {temp: 0, ...}                      the user's changes to the Text Completion settings
// }
// Output: { status: body of the status call, generate: body of the generate
// call, ajax: [{url, data}] the tokenize calls made while building it }.
import { register } from 'node:module';
import { pathToFileURL } from 'node:url';
import fs from 'node:fs';
import path from 'node:path';

// SillyTavern's modules log to the console: keep stdout for the answer.
console.log = console.debug = console.info = console.warn = (...a) => process.stderr.write(a.join(' ') + '\n');
const stDir = path.resolve(process.argv[2]);
const scenario = JSON.parse(fs.readFileSync(0, 'utf8'));
register(pathToFileURL(path.join(path.dirname(new URL(import.meta.url).pathname), 'loader_hooks.mjs')));

// The browser globals the modules touch when they load or run.
const ajaxCalls = [];
const chain = new Proxy(function () {}, { get: () => chain, apply: () => chain });
function jQuery(arg) {
    if (typeof arg === 'function') return undefined; // document-ready handlers: no page here
    return chain;
}
jQuery.ajax = (options) => {
    const data = JSON.parse(options.data);
    ajaxCalls.push({ url: options.url, data });
    const ids = scenario.token_ids?.[data.text] ?? [];
    options.success({ ids, count: ids.length });
};
globalThis.$ = jQuery;
globalThis.jQuery = jQuery;
globalThis.toastr = { info() {}, error() {}, warning() {}, success() {} };
globalThis.document = { getElementById: () => null };
const storage = { getItem: () => null, setItem() {}, removeItem() {} };
globalThis.localStorage = storage;
globalThis.sessionStorage = storage;
globalThis.localforage = { createInstance: function () { return { getItem: async () => null, setItem: async () => {} }; } };

const publicScripts = pathToFileURL(path.join(stDir, 'public', 'scripts')).href;
const script = await import(pathToFileURL(path.join(stDir, 'public', 'script.js')).href);
const powerUser = await import(`${publicScripts}/power-user.js`);
// tokenizers.js first, as in the page: it and textgen-settings.js import each other.
await import(`${publicScripts}/tokenizers.js`);
const textgen = await import(`${publicScripts}/textgen-settings.js`);
const kai = await import(`${publicScripts}/kai-settings.js`);

// default/content/settings.json, as loadTextGenSettings and loadKoboldSettings apply it.
const defaults = JSON.parse(fs.readFileSync(path.join(stDir, 'default', 'content', 'settings.json'), 'utf8'));
powerUser.power_user.tokenizer = scenario.tokenizer ?? defaults.power_user?.tokenizer ?? 99;
script.__set('main_api', scenario.main_api);
script.__set('max_context', defaults.max_context);
script.__set('online_status', scenario.online_status ?? 'no_connection');
const amountGen = scenario.amount_gen ?? defaults.amount_gen;
const output = { ajax: ajaxCalls };

if (scenario.main_api === 'textgenerationwebui') {
    const settings = textgen.textgenerationwebui_settings;
    Object.assign(settings, defaults.textgenerationwebui_settings ?? {});
    settings.type = scenario.type;
    settings.server_urls[scenario.type] = scenario.server_url;
    settings.banned_tokens = scenario.banned_tokens ?? '';
    settings.streaming = Boolean(scenario.streaming);
    settings.n = scenario.n ?? 1;
    Object.assign(settings, scenario.settings ?? {}); // the user's own changes, e.g. {temp: 0}
    // textgen-models.js#loadVllmModels: after a status call, the first model listed (Tabby's list starts with '').
    if (scenario.type === 'vllm') settings.vllm_model = scenario.models?.[0] ?? '';
    // public/script.js#getStatusTextgen
    output.status = { api_server: textgen.getTextGenServer(), api_type: settings.type, legacy_api: settings.legacy_api && settings.type === 'ooba' };
    const data = textgen.getTextGenGenerationData(scenario.prompt, amountGen, false, false, null, 'normal');
    // public/scripts/textgen-settings.js#generateTextGenWithStreaming sets stream; the other path sends the data as is.
    if (settings.streaming) data.stream = true;
    output.generate = JSON.parse(JSON.stringify(data)); // what fetch sends: undefined keys dropped
} else if (scenario.main_api === 'kobold') {
    // public/script.js: api_server is the formatted Kobold URL (formatKoboldUrl: path /api).
    const apiServer = kai.formatKoboldUrl(scenario.server_url);
    script.__set('api_server', apiServer);
    const presetName = defaults.preset_settings;
    const preset = JSON.parse(fs.readFileSync(path.join(stDir, 'default', 'content', 'presets', 'kobold', `${presetName}.json`), 'utf8'));
    kai.loadKoboldSettings({ ...preset, streaming_kobold: Boolean(scenario.streaming) });
    const [united, cpp] = scenario.kobold_versions ?? ['0.0.0', '0.0'];
    kai.setKoboldFlags(united, cpp);
    output.status = { main_api: 'kobold', api_server: apiServer };
    const data = kai.getKoboldGenerationData(scenario.prompt, preset, amountGen, defaults.max_context, false, 'normal');
    output.generate = JSON.parse(JSON.stringify(data));
    output.kai_flags = { ...kai.kai_flags };
}
process.stdout.write(JSON.stringify(output, null, 2) + '\n');
