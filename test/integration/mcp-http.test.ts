import { connectHttp, startTestGateway } from '../helpers/gateway.js';
import { contractPolicy, mcpContract } from './mcp-contract.js';

mcpContract('streamable HTTP', async () => {
  const gw = await startTestGateway(contractPolicy());
  return { connect: (key) => connectHttp(gw.mcpUrl, key), close: () => gw.close() };
});
