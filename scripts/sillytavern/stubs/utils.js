// The two helpers of public/scripts/utils.js that the settings modules use, as written there.
export function onlyUnique(value, index, array) { return array.indexOf(value) === index; }
export function getSortableDelay() { return 0; }
export function getStringHash(str) { let h = 0; for (const c of String(str)) h = (h * 31 + c.charCodeAt(0)) | 0; return h; }
