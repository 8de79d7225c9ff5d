// The control block shared by the engine's main thread and its workers: a
// generation number for table publication, a stop flag, and per-worker acks.
export const CTL_GEN = 0; // bumped after new tables were posted to every worker
export const CTL_STOP = 1; // 1 = workers leave their loop
export const CTL_ACK = 2; // CTL_ACK + w: the generation worker w is running with
export const CTL_READY = 34; // CTL_READY + w: 1 once worker w has opened its queues
// 1 = workers hold their queues unread: an agent taking over from another
// (agent/handover.ts) must not forward before it has the other's flow tables,
// or replies of translated flows would reach pods un-translated (and draw RSTs).
export const CTL_HOLD = 66;
export const CTL_INTS = 67;
export const MAX_WORKERS = 32;
