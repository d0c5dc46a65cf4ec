export const BIAS_CACHE = new Map();
export function createNewLogitBiasEntry() {}
export function displayLogitBias() {}
export function getLogitBiasListResult() { return {}; }
