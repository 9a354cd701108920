// Starts a real `teacher_server serve` process for tests, on a free loopback
// port, and stops it. Not thread-safe; one object per server.
#ifndef DISTILLERY_TESTS_SERVER_PROCESS_H_
#define DISTILLERY_TESTS_SERVER_PROCESS_H_

#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

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
  // Starts `binary` with `args` plus --address=127.0.0.1:0 and a port file,
  // and waits up to `timeout` for it to serve. port() is 0 on failure.
  bool Start(const std::string& binary, std::vector<std::string> args, const std::string& dir,
             std::chrono::seconds timeout = std::chrono::seconds(60)) {
    port_file_ = dir + "/port." + std::to_string(getpid()) + "." + std::to_string(++counter_);
    std::remove(port_file_.c_str());
    args.insert(args.begin(), {binary, "serve"});
    args.push_back("--address=127.0.0.1:0");
    args.push_back("--port_file=" + port_file_);
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (posix_spawn(&pid_, binary.c_str(), nullptr, nullptr, argv.data(), environ) != 0) {
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

 private:
  pid_t pid_ = 0;
  int port_ = 0;
  std::string port_file_;
  static inline int counter_ = 0;
};

}  // namespace distillery

#endif  // DISTILLERY_TESTS_SERVER_PROCESS_H_
