// The control block shared by the engine's main thread and its workers: a
// generation number for table publication, a stop flag, and per-worker acks.
export const CTL_GEN = 0; // bumped after new tables were posted to every worker
export const CTL_STOP = 1; // 1 = workers leave their loop
export const CTL_ACK = 2; // CTL_ACK + w: the generation worker w is running with
export const CTL_READY = 34; // CTL_READY + w: 1 once worker w has opened its queues
export const CTL_INTS = 66;
export const MAX_WORKERS = 32;
