<%@ page contentType="application/json" session="true" trimDirectiveWhitespaces="true" %><%
// The benchmark's handler (bench/http/server's /counter) as a JSP: POST
// adds one to the session's counter, unless its Idempotency-Key is the
// one of the last increment; the answer is {"value":n}.
Long stored = (Long) session.getAttribute("counter");
long n = stored == null ? 0 : stored;
if ("POST".equals(request.getMethod())) {
    String key = request.getHeader("Idempotency-Key");
    if (key == null || !key.equals(session.getAttribute("counter.idem"))) {
        n++;
        session.setAttribute("counter", n);
        if (key != null) {
            session.setAttribute("counter.idem", key);
        }
    }
}
response.setHeader("X-Bench-Node", System.getProperty("bench.node", ""));
String cookie = request.getHeader("Cookie"); // for wrk.lua, as the Go server does
if (cookie != null) {
    response.setHeader("X-Bench-Cookie", cookie);
}
%>{"value":<%= n %>}
