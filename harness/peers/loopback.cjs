// Preloaded into peers that bind every interface by default (Portkey's node server calls
// listen(port, undefined, cb)): a listen() given a port but no host binds 127.0.0.1 only.
// Servers in gatewaylab never listen beyond loopback.
const net = require("net");
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === "number" || (typeof args[0] === "string" && /^\d+$/.test(args[0]))) {
    if (args[1] === undefined || args[1] === null) {
      args[1] = "127.0.0.1";
    } else if (typeof args[1] === "function") {
      args.splice(1, 0, "127.0.0.1");
    }
  } else if (args[0] && typeof args[0] === "object" && args[0].port !== undefined && !args[0].host) {
    args[0] = { ...args[0], host: "127.0.0.1" };
  }
  return listen.apply(this, args);
};
