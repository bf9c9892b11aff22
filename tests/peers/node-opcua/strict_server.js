"use strict";
// node-opcua as a test peer: an OPC-UA server with strict certificate trust. Basic256Sha256 with
// Sign or SignAndEncrypt only; only the client certificates given with --trust are accepted, and
// any other is refused while the secure channel opens (a ServiceFault, BadSecurityChecksFailed),
// as node-opcua servers in the field do. Serves ns=1;s=Voltage (a Double). Prints "READY <url>".
//
//   node strict_server.js --port 4840 --pki DIR --cert server.pem --key server-key.pem \
//        --uri urn:test:server --trust client.pem [--trust other.pem ...]
const fs = require("node:fs");
const path = require("node:path");
const { OPCUAServer, RegisterServerMethod } = require("node-opcua-server");
const { OPCUACertificateManager } = require("node-opcua-certificate-manager");
const { SecurityPolicy } = require("node-opcua-secure-channel");
const { MessageSecurityMode } = require("node-opcua-service-secure-channel");
const { Variant, DataType } = require("node-opcua-variant");
const { convertPEMtoDER } = require("node-opcua-crypto");

function parseArgs(argv) {
    const out = { trust: [] };
    for (let i = 0; i < argv.length; i += 2) {
        const key = argv[i].replace(/^--/, "");
        if (key === "trust") out.trust.push(argv[i + 1]);
        else out[key] = argv[i + 1];
    }
    return out;
}

(async () => {
    const a = parseArgs(process.argv.slice(2));
    const manager = new OPCUACertificateManager({
        rootFolder: path.join(a.pki, "server"), automaticallyAcceptUnknownCertificate: false,
    });
    await manager.initialize();
    for (const file of a.trust) {
        await manager.trustCertificate(convertPEMtoDER(fs.readFileSync(file, "utf8")));
    }
    const server = new OPCUAServer({
        port: Number(a.port), host: "127.0.0.1", hostname: "127.0.0.1",
        certificateFile: a.cert, privateKeyFile: a.key, serverCertificateManager: manager,
        securityPolicies: [SecurityPolicy.Basic256Sha256],
        securityModes: [MessageSecurityMode.Sign, MessageSecurityMode.SignAndEncrypt],
        allowAnonymous: true, registerServerMethod: RegisterServerMethod.HIDDEN,
        serverInfo: { applicationUri: a.uri },
    });
    await server.initialize();
    const addressSpace = server.engine.addressSpace;
    let voltage = 230.0;
    addressSpace.getOwnNamespace().addVariable({
        organizedBy: addressSpace.rootFolder.objects, browseName: "Voltage", nodeId: "s=Voltage",
        dataType: "Double", minimumSamplingInterval: 100,
        value: { get: () => new Variant({ dataType: DataType.Double, value: voltage }) },
    });
    setInterval(() => { voltage = 230.0 + Math.random(); }, 100);
    await server.start();
    console.log(`READY ${server.getEndpointUrl()}`);
    const stop = async () => { await server.shutdown(0); process.exit(0); };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
})().catch((err) => { console.error(err); process.exit(1); });
