// Command go-hub is the benchmark's Go peer: a gorilla/websocket hub in go-pusher's style
// (hub goroutine owning uid -> clients, one read pump and one write pump per client), with the same
// /ws?token= and /send?uid=&message= contract as deno-pusher. It exists only to be measured.
package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

const (
	// writeWait is how long one frame write may take before the client is dropped.
	writeWait = 10 * time.Second
	// sendBuffer is the per-client queue length in messages; a full queue drops the client.
	sendBuffer = 256
)

var upgrader = websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 1024,
	CheckOrigin: func(r *http.Request) bool { return true }}

// client owns one connection; writePump is its only writer.
type client struct {
	hub  *hub
	uid  string
	conn *websocket.Conn
	send chan []byte
}

type unicast struct {
	uid     string
	message []byte
	reply   chan int
}

// hub owns the uid index; only its run goroutine touches it.
type hub struct {
	clients    map[string]map[*client]bool
	register   chan *client
	unregister chan *client
	unicast    chan unicast
}

func (h *hub) run() {
	for {
		select {
		case c := <-h.register:
			set := h.clients[c.uid]
			if set == nil {
				set = make(map[*client]bool)
				h.clients[c.uid] = set
			}
			set[c] = true
		case c := <-h.unregister:
			if set := h.clients[c.uid]; set != nil && set[c] {
				delete(set, c)
				close(c.send)
				if len(set) == 0 {
					delete(h.clients, c.uid)
				}
			}
		case u := <-h.unicast:
			delivered := 0
			for c := range h.clients[u.uid] {
				select {
				case c.send <- u.message:
					delivered++
				default:
					delete(h.clients[u.uid], c)
					close(c.send)
				}
			}
			u.reply <- delivered
		}
	}
}

func (c *client) readPump() {
	defer func() { c.hub.unregister <- c; c.conn.Close() }()
	c.conn.SetReadLimit(4096)
	for {
		if _, _, err := c.conn.ReadMessage(); err != nil {
			return
		}
	}
}

func (c *client) writePump() {
	defer c.conn.Close()
	for message := range c.send {
		c.conn.SetWriteDeadline(time.Now().Add(writeWait))
		if err := c.conn.WriteMessage(websocket.TextMessage, message); err != nil {
			return
		}
	}
	c.conn.WriteMessage(websocket.CloseMessage, []byte{})
}

// verifyUID checks an HS256 JWT and returns its string uid claim.
func verifyUID(token string, secret []byte) (string, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", fmt.Errorf("token is not a JWT")
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(parts[0] + "." + parts[1]))
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || !hmac.Equal(sig, mac.Sum(nil)) {
		return "", fmt.Errorf("bad signature")
	}
	body, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", err
	}
	var claims struct {
		UID string `json:"uid"`
	}
	if err := json.Unmarshal(body, &claims); err != nil || claims.UID == "" {
		return "", fmt.Errorf("no uid claim")
	}
	return claims.UID, nil
}

func main() {
	port := os.Getenv("PORT")
	secret := []byte(os.Getenv("JWT_SECRET"))
	h := &hub{clients: map[string]map[*client]bool{}, register: make(chan *client),
		unregister: make(chan *client), unicast: make(chan unicast)}
	go h.run()
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	http.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		uid, err := verifyUID(r.URL.Query().Get("token"), secret)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		conn, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		c := &client{hub: h, uid: uid, conn: conn, send: make(chan []byte, sendBuffer)}
		h.register <- c
		go c.writePump()
		go c.readPump()
	})
	http.HandleFunc("/send", func(w http.ResponseWriter, r *http.Request) {
		uid, message := r.FormValue("uid"), r.FormValue("message")
		reply := make(chan int, 1)
		h.unicast <- unicast{uid: uid, message: []byte(message), reply: reply}
		delivered := <-reply
		w.Header().Set("Content-Type", "application/json")
		if delivered == 0 {
			w.WriteHeader(http.StatusNotFound)
		}
		fmt.Fprintf(w, `{"uid":%q,"delivered":%d}`, uid, delivered)
	})
	log.Fatal(http.ListenAndServe(":"+port, nil))
}
