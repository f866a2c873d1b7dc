// Placeholder until the qcow2 driver lands (replaced by the qcow2 read path).
export {};
