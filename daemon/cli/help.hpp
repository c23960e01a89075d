// jobqctl's words about itself: usage lines, CLI11's errors said plainly, "did you mean", and the
// shell completion generated from the commands themselves.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace jq::cli {

/// The values some arguments take, for their checks and for the completion alike.
extern const std::vector<std::string> kStates;
extern const std::vector<std::string> kDeadActions;

/// The word after the options that should name a command, when it names none (with the closest
/// command, if one is near): CLI11 would only say "A subcommand is required".
std::optional<std::string> unknown_command(const CLI::App& app, int argc, char** argv);
/// The command CLI11 parsed, if any.
const CLI::App* parsed_command(const CLI::App& app);
/// `usage: jobqctl submit QUEUE [PAYLOAD] [OPTIONS] (...)` for a command, or the general one.
std::string usage_line(const CLI::App* cmd);
/// CLI11's message in jobqctl's words: which command, which argument, what is allowed.
std::string explain(const CLI::App& app, const CLI::ParseError& e);
/// `jobqctl --completion bash|zsh`: generated from the commands and options, so that it cannot
/// drift from them.
std::string completion_script(const CLI::App& app, const std::string& shell);

}  // namespace jq::cli
