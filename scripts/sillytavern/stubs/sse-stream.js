export function getEventSourceStream() { throw new Error('not in node'); }
