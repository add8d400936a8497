/**
 * The web module's bus contract
 * (docs/conventions.md#each-domain-owns-its-bus-topics): every topic the web module publishes or
 * answers, with its payload type. Other modules import this file, never the module itself.
 */
export const WEB = {
  /** request {} → WebInfo: where an instance of the web module listens (useful with `port: 0`) */
  info: (instance: string) => `web/${instance}/info`,
} as const;

export interface WebInfo {
  /** http://host:port of the bound address */
  url: string;
  host: string;
  port: number;
  /** whether callers need a bearer token */
  auth: boolean;
  ws_clients: number;
}
