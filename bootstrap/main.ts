/**
 * `npm start`: runs the hub (bootstrap/hub.ts) with config.yml or $HUB_CONFIG. The operator
 * CLI's `gmq-hub start` runs the very same function.
 */
import { runHub } from './hub.js';

void runHub();
