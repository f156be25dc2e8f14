//! `plexus-cli`: a Matrix client for the terminal, with end-to-end encryption.
//!
//! ```text
//! plexus-cli --state ~/.plexus-cli.json register --server http://localhost:8008 --user alice --password ...
//! plexus-cli create-room --encrypted --invite @bob:localhost
//! plexus-cli send '!room:localhost' 'hello, encrypted'
//! plexus-cli tail '!room:localhost' --follow
//! ```

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use plexus_cli::{Client, Message};

#[derive(Parser)]
#[command(
    name = "plexus-cli",
    about = "A Matrix client with end-to-end encryption"
)]
struct Args {
    /// The client state file (session, device keys, Olm and Megolm sessions).
    #[arg(long, env = "PLEXUS_CLI_STATE", default_value = "plexus-cli.json")]
    state: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create an account (open registration) and a device with encryption keys.
    Register {
        #[arg(long)]
        server: String,
        #[arg(long)]
        user: String,
        #[arg(long, env = "PLEXUS_CLI_PASSWORD")]
        password: String,
    },
    /// Log in as a new device with its own encryption keys.
    Login {
        #[arg(long)]
        server: String,
        #[arg(long)]
        user: String,
        #[arg(long, env = "PLEXUS_CLI_PASSWORD")]
        password: String,
    },
    /// The rooms you are in.
    Rooms,
    /// Create a room (private; `--encrypted` turns on Megolm).
    CreateRoom {
        #[arg(long)]
        encrypted: bool,
        #[arg(long)]
        invite: Vec<String>,
    },
    Join {
        room: String,
    },
    Invite {
        room: String,
        user: String,
    },
    /// Send a text message (encrypted if the room is).
    Send {
        room: String,
        text: String,
    },
    /// Print the latest messages, decrypted; `--follow` keeps printing new ones.
    Tail {
        room: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        follow: bool,
    },
}

fn print(m: &Message) {
    let lock = if m.encrypted { "🔒 " } else { "" };
    match (&m.body, &m.error) {
        (Some(b), _) => println!("{lock}{}: {b}", m.sender),
        (None, Some(e)) => println!("{lock}{}: <unable to decrypt: {e}>", m.sender),
        (None, None) => println!("{lock}{}: <no text>", m.sender),
    }
}

async fn run(args: Args) -> Result<(), plexus_cli::Error> {
    let state = args.state.as_path();
    match args.command {
        Command::Register {
            server,
            user,
            password,
        } => {
            let c = Client::register(&server, &user, &password, Some(state)).await?;
            println!("registered {} (device {})", c.user_id, c.device_id);
        }
        Command::Login {
            server,
            user,
            password,
        } => {
            let c = Client::login(&server, &user, &password, Some(state)).await?;
            println!("logged in as {} (device {})", c.user_id, c.device_id);
        }
        Command::Rooms => {
            let c = Client::load(state)?;
            for r in c.joined_rooms().await? {
                let lock = if c.is_encrypted(&r).await? {
                    " (encrypted)"
                } else {
                    ""
                };
                println!("{r}{lock}");
            }
        }
        Command::CreateRoom { encrypted, invite } => {
            let mut c = Client::load(state)?;
            println!("{}", c.create_room(encrypted, &invite).await?);
        }
        Command::Join { room } => {
            let mut c = Client::load(state)?;
            println!("{}", c.join(&room).await?);
        }
        Command::Invite { room, user } => {
            let mut c = Client::load(state)?;
            c.invite(&room, &user).await?;
        }
        Command::Send { room, text } => {
            let mut c = Client::load(state)?;
            // Room keys and device list changes first.
            c.sync_once(0).await?;
            println!("{}", c.send_text(&room, &text).await?);
        }
        Command::Tail {
            room,
            limit,
            follow,
        } => {
            let mut c = Client::load(state)?;
            c.sync_once(0).await?;
            for m in c.messages(&room, limit).await? {
                print(&m);
            }
            if follow {
                loop {
                    for m in c.sync_once(30_000).await? {
                        if m.room == room {
                            print(&m);
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Err(e) = run(Args::parse()).await {
        eprintln!("plexus-cli: {e}");
        std::process::exit(1);
    }
}
