// Starts a real `teacher_server serve` process for tests, on a free loopback
// port, and stops it. Not thread-safe; one object per server.
#ifndef DISTILLERY_TESTS_SERVER_PROCESS_H_
#define DISTILLERY_TESTS_SERVER_PROCESS_H_

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace distillery {

// A TCP port on 127.0.0.1 that was free a moment ago.
inline int PickFreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  socklen_t length = sizeof(address);
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  const int port = ntohs(address.sin_port);
  close(fd);
  return port;
}

class ServerProcess {
 public:
  // Starts `binary` with `args` plus --address=127.0.0.1:<port> (0 = any
  // free port) and a port file, and waits up to `timeout` for it to serve.
  // port() is 0 on failure. With `log_path`, its output goes there.
  bool Start(const std::string& binary, std::vector<std::string> args, const std::string& dir,
             std::chrono::seconds timeout = std::chrono::seconds(60), int port = 0,
             const std::string& log_path = "") {
    port_file_ = dir + "/port." + std::to_string(getpid()) + "." + std::to_string(++counter_);
    std::remove(port_file_.c_str());
    // The tests compare answers with in-process f32 networks: unless `args`
    // name a precision, serve in f32 (auto picks bf16 on some CPUs).
    if (std::none_of(args.begin(), args.end(),
                     [](const std::string& a) { return a.rfind("--precision=", 0) == 0; })) {
      args.push_back("--precision=f32");
    }
    args.insert(args.begin(), {binary, "serve"});
    args.push_back("--address=127.0.0.1:" + std::to_string(port));
    args.push_back("--port_file=" + port_file_);
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    if (!log_path.empty()) {
      posix_spawn_file_actions_addopen(&actions, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                       0644);
      posix_spawn_file_actions_adddup2(&actions, 1, 2);
    }
    const int rc = posix_spawn(&pid_, binary.c_str(), &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      pid_ = 0;
      return false;
    }
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      std::ifstream in(port_file_);
      if (in >> port_) return true;
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {  // died during start-up
        pid_ = 0;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string target() const { return "127.0.0.1:" + std::to_string(port_); }

  // Sends `signal` and waits for the exit; returns the exit status as
  // waitpid reports it, or -1.
  int Stop(int signal = SIGTERM) {
    if (pid_ == 0) return -1;
    kill(pid_, signal);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = 0;
    return status;
  }
  void SendSignal(int signal) {
    if (pid_ != 0) kill(pid_, signal);
  }
  // Waits for the process to exit; returns its wait status.
  int Wait() {
    int status = 0;
    if (pid_ != 0) waitpid(pid_, &status, 0);
    pid_ = 0;
    return status;
  }
  ~ServerProcess() { Stop(SIGKILL); }

  // Runs `binary` with `args` to completion (at most `timeout`, then it is
  // killed); returns its wait status and leaves its output in `log_path`.
  static int Run(const std::string& binary, std::vector<std::string> args,
                 const std::string& log_path,
                 std::chrono::seconds timeout = std::chrono::seconds(300)) {
    pid_t pid = SpawnLogged(binary, std::move(args), log_path);
    if (pid == 0) return -1;
    return WaitWithTimeout(pid, timeout);
  }

  // Starts `binary` with `args`, output to `log_path`; returns its pid or 0.
  static pid_t SpawnLogged(const std::string& binary, std::vector<std::string> args,
                           const std::string& log_path) {
    args.insert(args.begin(), binary);
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    pid_t pid = 0;
    const int rc = posix_spawn(&pid, binary.c_str(), &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    return rc == 0 ? pid : 0;
  }

  // Waits for `pid` at most `timeout` (then kills it); returns the wait status.
  static int WaitWithTimeout(pid_t pid, std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    int status = 0;
    while (waitpid(pid, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return status;
  }

 private:
  pid_t pid_ = 0;
  int port_ = 0;
  std::string port_file_;
  static inline int counter_ = 0;
};

}  // namespace distillery

#endif  // DISTILLERY_TESTS_SERVER_PROCESS_H_
