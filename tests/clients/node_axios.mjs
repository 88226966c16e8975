// axios through claimgate: POST the request body on stdin to URL, print the answer.
//   node node_axios.mjs URL          # HTTPS_PROXY and NODE_EXTRA_CA_CERTS from the environment (axios >= 1.16.1)
//   node node_axios.mjs URL PROXY    # https-proxy-agent in code (any axios); CA from NODE_EXTRA_CA_CERTS
// Needs `npm install axios https-proxy-agent@7`.
import { readFileSync } from 'node:fs';
import axios from 'axios';
import { HttpsProxyAgent } from 'https-proxy-agent';

const [url, proxy] = process.argv.slice(2);
const body = readFileSync(0);

const options = proxy
  ? // In code: axios's own proxy handling off, a CONNECT tunnel through claimgate instead.
    { proxy: false, httpsAgent: new HttpsProxyAgent(proxy) }
  : {};
const response = await axios.post(url, body, { ...options, responseType: 'text' });
console.log(response.data);
