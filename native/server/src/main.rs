fn main() {
    std::process::exit(gatewaylab_server::cli::main());
}
