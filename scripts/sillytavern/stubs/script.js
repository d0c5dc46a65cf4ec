// Stub of SillyTavern's public/script.js: the values its settings functions read.
export let main_api = 'textgenerationwebui';
export let max_context = 8192; // default/content/settings.json: max_context
export let api_server = '';
export let online_status = 'no_connection';
export const characters = [];
export const this_chid = undefined;
export const nai_settings = { model_novel: '' };
export const eventSource = { emitAndWait: async () => {}, emit: async () => {} };
export const event_types = { TEXT_COMPLETION_SETTINGS_READY: 'text_completion_settings_ready' };
export function getRequestHeaders() { return {}; }
export function saveSettingsDebounced() {}
export function setGenerationParamsFromPreset() {}
export function setOnlineStatus(value) { online_status = value; }
export function substituteParams(value) { return value; }
// getStoppingStrings with default power_user (names_as_stop_strings on, instruct
// off, no custom strings) and the user named "User": public/script.js#getStoppingStrings.
export function getStoppingStrings(isImpersonate, isContinue) { return ['\nUser:']; }
export function __set(name, value) {
    if (name === 'main_api') main_api = value;
    else if (name === 'max_context') max_context = value;
    else if (name === 'api_server') api_server = value;
    else if (name === 'online_status') online_status = value;
    else throw new Error(`unknown ${name}`);
}
