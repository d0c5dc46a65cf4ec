// Module resolution hooks: SillyTavern's page modules that need a browser are
// replaced by the stubs in ./stubs; textgen-settings.js, kai-settings.js and
// tokenizers.js load unchanged from the SillyTavern checkout.
import { pathToFileURL } from 'node:url';
import path from 'node:path';

const STUBS = new Map([
    ['script.js', 'script.js'],
    ['scripts/power-user.js', 'power-user.js'],
    ['scripts/logit-bias.js', 'logit-bias.js'],
    ['scripts/sse-stream.js', 'sse-stream.js'],
    ['scripts/textgen-models.js', 'textgen-models.js'],
    ['scripts/utils.js', 'utils.js'],
    ['scripts/openai.js', 'openai.js'],
    ['scripts/group-chats.js', 'group-chats.js'],
]);
const stubDir = path.join(path.dirname(new URL(import.meta.url).pathname), 'stubs');

export async function resolve(specifier, context, nextResolve) {
    const result = await nextResolve(specifier, context);
    const marker = '/public/';
    const at = result.url.lastIndexOf(marker);
    if (at >= 0) {
        const rel = result.url.slice(at + marker.length);
        const stub = STUBS.get(rel);
        if (stub) {
            return { url: pathToFileURL(path.join(stubDir, stub)).href, shortCircuit: true, format: 'module' };
        }
        // The page's scripts are ES modules, though SillyTavern's package.json says CommonJS.
        return { ...result, format: 'module', shortCircuit: true };
    }
    return result;
}
