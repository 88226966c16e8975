// undici through claimgate: POST the request body on stdin to URL, print the answer.
//   node node_undici.mjs URL                 # HTTPS_PROXY, NO_PROXY and NODE_EXTRA_CA_CERTS from the environment
//   node node_undici.mjs URL PROXY CA_FILE   # both set in code
// Needs `npm install undici@6` (Node 18 to 22; undici@7 for Node 24).
import { readFileSync } from 'node:fs';
import { EnvHttpProxyAgent, ProxyAgent, fetch as undiciFetch, setGlobalDispatcher } from 'undici';

const [url, proxy, ca] = process.argv.slice(2);
const body = readFileSync(0);

let response;
if (proxy && ca) {
  // In code: one agent that tunnels through claimgate and trusts its CA for the API host.
  const dispatcher = new ProxyAgent({ uri: proxy, requestTls: { ca: readFileSync(ca) } });
  response = await undiciFetch(url, { method: 'POST', body, dispatcher });
} else {
  // At start-up, once: every fetch() follows HTTPS_PROXY / NO_PROXY; the CA comes from
  // NODE_EXTRA_CA_CERTS, which adds to Node's built-in roots.
  setGlobalDispatcher(new EnvHttpProxyAgent());
  response = await fetch(url, { method: 'POST', body });
}
if (!response.ok) throw new Error(`HTTP ${response.status}`);
console.log(await response.text());
