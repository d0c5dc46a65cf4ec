export const openRouterModels = [];
export function getCurrentDreamGenModelTokenizer() { return 3; }
export function getCurrentOpenRouterModelTokenizer() { return 3; }
