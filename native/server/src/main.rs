/// mimalloc rather than glibc malloc: a request allocates and frees many small blocks across
/// the Tokio workers and the ledger thread (docs/rs_server.md "Where the instructions go").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(gatewaylab_server::cli::main());
}
