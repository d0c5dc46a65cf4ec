export const chat_completion_sources = {};
export const model_list = [];
export const oai_settings = {};
