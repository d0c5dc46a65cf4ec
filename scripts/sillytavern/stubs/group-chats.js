export const groups = [];
export const selected_group = null;
